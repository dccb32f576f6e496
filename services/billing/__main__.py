from services.billing.service import SERVICE
from shopmesh.runtime.server import main

main(SERVICE)
