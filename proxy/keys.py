"""Typed keys for what the app and each request carry (aiohttp's AppKey/RequestKey)."""

from __future__ import annotations

from aiohttp import web

from proxy.access import AccessPolicy, Caller
from proxy.config import ProxyConfig
from proxy.forwarding import CallRecord, Forwarder
from proxy.holders import CredentialHolder
from proxy.metrics import Metrics
from proxy.routing import RouteTable

CONFIG = web.AppKey("config", ProxyConfig)
ROUTES = web.AppKey("routes", RouteTable)
HOLDERS = web.AppKey("holders", dict[str, CredentialHolder])
FORWARDER = web.AppKey("forwarder", Forwarder)
POLICY = web.AppKey("policy", AccessPolicy)
METRICS = web.AppKey("metrics", Metrics)
REQUEST_ID = web.RequestKey("request_id", str)
CALL = web.RequestKey("call", CallRecord)
CALLER = web.RequestKey("caller", Caller)
