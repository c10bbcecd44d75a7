from services.evaluation.app import build_spec
from shared.service import serve

if __name__ == "__main__":
    serve(build_spec())
