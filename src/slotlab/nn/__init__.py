"""The neural-network wing: Slot Attention, its fast paths, the building blocks and the models built on them.

Imports torch and slotlab's config only; heavy optional libraries are imported lazily by the module that needs
them."""
