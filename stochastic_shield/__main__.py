"""python -m stochastic_shield == shield."""
import sys

from .cli import main

sys.exit(main())
