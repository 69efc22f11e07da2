import sys

from fsqkit.cli import main

sys.exit(main())
