import json

from scripts import contract_docs
from shared.topics import CONTRACT_TOPICS


def test_the_committed_asyncapi_document_matches_the_models():
    committed = contract_docs.OUT.read_text()
    assert committed == contract_docs.render(), (
        "the event contract changed: run `python -m scripts.contract_docs` and commit the result")


def test_every_topic_and_message_is_documented():
    doc = json.loads(contract_docs.render())
    assert set(doc["channels"]) == set(CONTRACT_TOPICS)
    names = {m["name"] for m in doc["components"]["messages"].values()}
    assert {"TksRecruited", "GroupFunded", "ReportFiled", "TksEvaluated"} <= names
    funded = doc["components"]["schemas"]["GroupFunded.v1"]
    assert funded["properties"]["amount"]["type"] == "integer"
