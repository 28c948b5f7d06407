@echo off
REM Overnight training with the rtx3060-enhanced preset; same restart logic as train_overnight.bat.
REM
REM   examples\train_overnight_enhanced.bat --data path\to\data --model-name gpt2
setlocal
set PRESET=rtx3060-enhanced
call "%~dp0train_overnight.bat" %*
