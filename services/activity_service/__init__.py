"""The Activity domain: an activity-listener that records every event of every topic as
activity history, and a read API over it (who changed what, when)."""
