"""Watch: a baseline per identity and site, kept incrementally from the audit trail as events arrive, and
explainable flags when an identity behaves unlike itself — each naming the signals that fired and what they
were compared with — plus the always-high ones (an AI agent outside its delegation, a write burst, a credential
in two places) whatever the baseline says."""
