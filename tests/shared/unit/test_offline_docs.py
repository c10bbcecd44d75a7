"""The services serve Swagger UI and ReDoc themselves: the pages reference only local asset URLs
(no CDN) and those assets answer 200."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.support.edge import SERVICES, build_app


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_load_only_local_assets(page):
    app = build_app(SERVICES[0])  # no lifespan: the pages need neither Kafka nor Postgres
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://svc") as client:
        response = await client.get(page)
        assert response.status_code == 200
        html = response.text
        urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
        urls += re.findall(r"""(?:url|openapi_url|oauth2RedirectUrl)['"]?\s*:\s*['"]([^'"]+)['"]""",
                           html)
        assert urls, html
        assert not re.search(r"https?://", html.replace("http://svc", "")), \
            f"{page} references a remote URL"
        assets = [u for u in urls if u.startswith("/docs-assets/")]
        assert any(u.endswith(".js") for u in assets)
        for url in urls:
            assert url.startswith("/"), f"{page} references {url}"
            answer = await client.get(url)
            assert answer.status_code == 200, url
            assert answer.content
        assert (await client.get("/openapi.json")).status_code == 200


def test_the_docs_pages_are_not_api_operations():
    paths = build_app(SERVICES[0]).openapi()["paths"]
    assert not {p for p in paths if p.startswith(("/docs", "/redoc"))}
