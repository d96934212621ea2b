import sys

from bundlesync.cli import main

sys.exit(main())
