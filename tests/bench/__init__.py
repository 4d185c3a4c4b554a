"""Every script of ``bench/`` runs at its tiny size (``--tiny``)."""
