from services.analytics.service import SERVICE
from shopmesh.runtime.server import main

main(SERVICE)
