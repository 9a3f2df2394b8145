"""The Person domain: the Person API (source of truth for people) and the person-listener,
which keeps each person's ``tenures[]`` current from tenure events."""
