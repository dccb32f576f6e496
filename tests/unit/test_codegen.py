"""Generated code comes from protos/ by one command, and a stale copy is caught."""

from shopmesh.tooling import codegen


def test_generated_code_matches_the_protos():
    assert codegen.stale_files() == []


def test_a_hand_edited_generated_file_is_reported_stale(tmp_path):
    out = codegen.generate(tmp_path)
    edited = out / "shopmesh" / "customer" / "v1" / "customer_service_pb2.py"
    edited.write_text(edited.read_text() + "# edited by hand\n")
    assert codegen.stale_files(out) == ["customer_service_pb2.py"]


def test_the_descriptor_set_carries_the_http_annotations_and_their_imports(tmp_path):
    from google.protobuf import descriptor_pb2

    out = codegen.generate(tmp_path)
    descriptor_set = out / codegen.DESCRIPTOR_SET.relative_to(codegen.PROJECT_ROOT)
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes()).file
    names = {file.name for file in files}
    assert {
        "google/api/annotations.proto",
        "google/api/http.proto",
        "shopmesh/billing/v1/billing_service.proto",
    } <= names
