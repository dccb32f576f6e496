from services.customer.service import SERVICE
from shopmesh.server import main

main(SERVICE)
