import sys

from mountfs.cli import main

sys.exit(main())
