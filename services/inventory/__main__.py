from services.inventory.service import SERVICE
from shopmesh.runtime.server import main

main(SERVICE)
