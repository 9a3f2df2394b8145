"""The Alerts receiver: an HTTP endpoint the push dispatcher delivers tenure events to
(signed as Standard Webhooks says), recording the alerts a housing officer would get, and
a read API over them. It is no tidings listener: any HTTP server in any language could
take its place."""
