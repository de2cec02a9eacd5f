"""Tools an agent may call, and the gate every call passes: `tools.registry` (what exists,
with declared capabilities and argument schemas), `tools.capabilities` (what one run may do,
frozen when it starts) and `tools.gate` (the decision for one call)."""
