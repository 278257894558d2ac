"""
The status page at GET /: a small offline page (HTML, CSS and JS shipped as
package data) that polls GET /status/data for a snapshot of the daemon.
"""
