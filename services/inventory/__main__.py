from services.inventory.service import SERVICE
from shopmesh.server import main

main(SERVICE)
