"""slotlab: Slot Attention (Locatello et al., NeurIPS 2020) for object-centric learning.

The few names most users need::

    from slotlab import SlotAttention, SlotAttentionAutoEncoder, get_experiment, metrics
"""

from slotlab import metrics
from slotlab.experiments import get_experiment
from slotlab.models import SlotAttentionAutoEncoder
from slotlab.slot_attention import SlotAttention

__all__ = ["SlotAttention", "SlotAttentionAutoEncoder", "get_experiment", "metrics"]
__version__ = "0.1.0"
