"""What simulations leave behind and how it is read: runs, evaluation, reports, ASM."""
