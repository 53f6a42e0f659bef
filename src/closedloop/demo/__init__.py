"""The demo shop: a synthetic shop's customers sent through the real tracking API."""

from closedloop.demo.shop import DemoReport, generate_shop, send_demo

__all__ = ["DemoReport", "generate_shop", "send_demo"]
