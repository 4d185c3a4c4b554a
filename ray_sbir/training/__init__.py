"""Training tasks (a registry) and the plain step functions the Ray Train loop calls; no Ray here."""

from ray_sbir.training.tasks import (
    Task, TaskContext, TaskInputs, create_task, list_tasks, register_task, task_class, validate_task,
)

# Importing a task's module registers it.
from ray_sbir.training import distill, doodle2search, rerank  # noqa: E402,F401  isort: skip

__all__ = ["Task", "TaskContext", "TaskInputs", "create_task", "list_tasks", "register_task", "task_class",
           "validate_task"]
