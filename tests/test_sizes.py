"""Input sizes: `HxW` strings and the teacher's size multiple."""

import pytest

from nas.core.errors import NasError
from nas.core.sizes import check_multiple, parse_size


def test_parse():
    assert parse_size("520x520") == (520, 520)
    assert parse_size("1024X2048") == (1024, 2048)
    assert parse_size(" 288 x 640 ") == (288, 640)


@pytest.mark.parametrize(
    "text", ["520", "520x", "x520", "520*520", "0x10", "a x b", "520x520x3", "-1x5"]
)
def test_rejects(text):
    with pytest.raises(NasError, match=r"expected HxW in pixels, e.g. 520x520"):
        parse_size(text)


def test_multiple():
    check_multiple((512, 640), 32, who="t")
    with pytest.raises(NasError, match=r"multiples of 32, e\.g\. 512x512"):
        check_multiple((520, 520), 32, who="t")
