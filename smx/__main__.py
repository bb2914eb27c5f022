import sys

from smx.cli import main

sys.exit(main())
