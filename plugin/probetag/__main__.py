import sys

from probetag.cli import main

sys.exit(main())
