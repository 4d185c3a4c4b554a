"""``python -m ray_sbir.data.doodles``: the same as ``ray-sbir make-doodles``."""

from ray_sbir.data.doodles import main

main()
