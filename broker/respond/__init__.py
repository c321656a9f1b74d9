"""Respond: named, versioned containment playbooks — run by hand or rehearsed as drills — each action audited
under the run's id, so a reviewer reads the whole response, step by step, from the hash-chained trail."""
