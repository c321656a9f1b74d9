"""Access: requests, approvals, grants and their extensions, quick grants, and the supervisors' read-side views."""
