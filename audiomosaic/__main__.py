import sys

from audiomosaic.cli import main

sys.exit(main())
