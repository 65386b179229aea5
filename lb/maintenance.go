package lb

// MaintenanceRetryAfter is the Retry-After header (seconds) of every
// maintenance answer: when a client may try again. Each driver sends it.
const MaintenanceRetryAfter = "60"

// DefaultMaintenancePage is the body of the maintenance answers of a route
// without a MaintenancePage (text/plain).
const DefaultMaintenancePage = "503 Service Unavailable: down for maintenance, try again later\n"
