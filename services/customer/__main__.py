from services.customer.service import SERVICE
from shopmesh.runtime.server import main

main(SERVICE)
