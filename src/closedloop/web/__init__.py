"""The HTTP interface: tracking API, management API, operations."""

from closedloop.web.app import create_app

__all__ = ["create_app"]
