import pytest

from cxr_bench.errors import ConfigError
from cxr_bench.registry import Registry


def test_register_get_and_errors():
    reg: Registry = Registry("widget")

    @reg.register()
    def alpha():
        return 1

    reg.add("beta", lambda: 2)
    assert reg.get("alpha")() == 1 and reg.names() == ["alpha", "beta"] and "beta" in reg
    with pytest.raises(ConfigError, match="unknown widget 'gamma'; known: alpha, beta"):
        reg.get("gamma")
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("alpha", object())
