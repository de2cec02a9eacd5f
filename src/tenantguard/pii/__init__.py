"""The PII sentinel: detectors (one per class) and, to come, policies per tenant, class and
channel, and the reversible vault."""
