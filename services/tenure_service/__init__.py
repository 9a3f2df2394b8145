"""The Tenure domain: the Tenure API (source of truth for tenures and their households) and
the tenure-listener, which keeps each household member's name and date of birth current
from person events."""
