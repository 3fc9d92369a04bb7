import sys

from tribind.cli import main

sys.exit(main())
