"""Phase 1, domain knowledge detection: sample the base model unconditionally, label each text with a domain, and
turn the labels into starting shares (`versatune detect`)."""
