"""Calculator: a Spyne SOAP service shaped like the classic WCF ``ICalculator`` sample."""

from __future__ import annotations

# spyne must only be imported after the interpreter compatibility measure.
from wcfrelay import compat as _compat

_compat.ensure_spyne_importable()
