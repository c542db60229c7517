"""The active-learning engine that live sessions and simulations both run: selection
rounds on a session's current embedding version, UPS, ASVP feature checks, LogME."""
