import sys

from ffray.cli import main

sys.exit(main())
