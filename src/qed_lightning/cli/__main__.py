from qed_lightning.cli import main

main()
