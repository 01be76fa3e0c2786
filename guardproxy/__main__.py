import sys

from guardproxy.cli.main import main

sys.exit(main())
