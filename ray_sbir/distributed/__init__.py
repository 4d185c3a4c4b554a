"""The Ray layer: everything of ray-sbir that runs on a Ray cluster, built on the plain library.

Modules
    ``runtime``          starting or joining a Ray cluster, device choice, Ray's log noise
    ``datasets``         Ray Data pipelines: training triplets, decoded items, the item check
    ``train``            the Ray Train driver and worker loop (DDP, checkpoints, resume)
    ``embed``            the gallery embedding job (a Parquet index)
    ``index_quickdraw``  QuickDraw ndjson files -> a Parquet index
    ``evaluate``         zero-shot evaluation: embed queries and gallery, rank through :mod:`ray_sbir.search`
    ``demo``             the end-to-end demo

Serve's deployments live in :mod:`ray_sbir.serving`; ``jobs/``, ``serve/`` and the CLI call into here.
"""
