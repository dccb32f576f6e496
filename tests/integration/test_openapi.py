"""The REST API's OpenAPI description in the repo is what the protos generate, with the Go-built plugin that
`shopmesh install` brings (so it is checked here, not in the fast tier)."""

from shopmesh.runtime.settings import load
from shopmesh.tooling import codegen, install


def test_the_openapi_description_in_the_repo_is_what_the_protos_generate():
    plugin = install.installed_path(install.COMPONENTS["protoc-gen-openapi"], load().cache_dir)
    assert plugin is not None, "protoc-gen-openapi is not installed: run `make install`"
    fresh = codegen.render_openapi(plugin / "bin" / "protoc-gen-openapi")
    assert fresh == codegen.OPENAPI.read_text(), "protos/openapi.yaml is stale: run `make install` and commit it"
    assert "/v1/customers/{id}:" in fresh and "/v1/bills:" in fresh
