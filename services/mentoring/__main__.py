from services.mentoring.app import build_spec
from shared.service import serve

serve(build_spec())
