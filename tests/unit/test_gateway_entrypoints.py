"""The gateway is one class made of mixins (the API, the portal, the office's pages): a method
of the same name in two of them silently drops one entrypoint (seen once: the portal's form
for naming a Navigator answered 404 because the API's handler had the same name)."""
from services.gateway.coaching import CoachPages
from services.gateway.office import OfficePages
from services.gateway.portal import PortalPages
from services.gateway.service import GatewayService

DUNDER = {"__module__", "__doc__", "__qualname__", "__dict__", "__weakref__"}


def entrypoints(cls):
    return {name for name, value in vars(cls).items()
            if getattr(value, "nameko_entrypoints", None)}


def test_no_mixin_entrypoint_is_shadowed():
    parts = [GatewayService, PortalPages, OfficePages, CoachPages]
    for index, part in enumerate(parts):
        for other in parts[index + 1:]:
            assert not (set(vars(part)) - DUNDER) & entrypoints(other), (part, other)
            assert not (set(vars(other)) - DUNDER) & entrypoints(part), (other, part)


def test_every_entrypoint_of_the_mixins_is_served():
    served = {name for name in dir(GatewayService)
              if getattr(getattr(GatewayService, name), "nameko_entrypoints", None)}
    assert entrypoints(PortalPages) | entrypoints(OfficePages) | entrypoints(CoachPages) <= served
