from services.facturation_producer.producer import main

main()
