from services.billing.service import SERVICE
from shopmesh.server import main

main(SERVICE)
