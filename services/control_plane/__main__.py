from services.control_plane.service import SERVICE
from shopmesh.server import main

main(SERVICE)
