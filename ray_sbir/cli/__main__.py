import sys

from ray_sbir.cli import main

sys.exit(main())
