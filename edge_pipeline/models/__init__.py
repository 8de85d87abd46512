"""Models: the zoo and torchvision adapter behind one registry (`base`), our own layers, structural
edits as data, model save/load (`store`), user weights (`weights`) and counting (`counting`).

Importing this package stays light (no torch): `recipe` checks architecture names through
`models.names` on the CLI's fast path.
"""

from .base import BaseSpec, build_model
from .names import ZOO
from .weights import load_initial_weights

__all__ = ["BaseSpec", "build_model", "load_initial_weights", "ZOO"]
