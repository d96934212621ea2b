import sys

from bundlesync.operations.quick import main

sys.exit(main())
