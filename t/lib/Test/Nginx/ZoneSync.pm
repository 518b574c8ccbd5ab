package Test::Nginx::ZoneSync;

# Speaking the zone_sync wire protocol (docs/PROTOCOL.md) from perl: frame
# builders, a frame splitter, and fake nodes for the tests of hostile or
# slow peers.

=head1 SYNOPSIS

    use Test::Nginx::ZoneSync qw/:all/;

    my $bytes = zs_hello(0x1234567, ['h', 1, 1])
        . zs_records(seq => 1, zone => 'h',
            records => [zs_record(key => 'k', value => 'v')]);
    my @frames = zs_take_frames(\$buffer);   # ([$type, $body], ...)

    # a fake node accepting on $port (run with run_daemon)
    zs_fake_server($port, zones => [['h', 1, 1]], ack => 1,
        read_rate => 20000, stats => "$dir/stats");

=cut

use strict;
use warnings;

use Exporter qw/import/;
use IO::Select;
use IO::Socket::INET;
use IO::Socket::UNIX;
use Socket qw/SOL_SOCKET SO_RCVBUF/;
use Time::HiRes qw/time sleep/;

our @EXPORT_OK = qw/zs_frame zs_hello zs_record zs_records zs_ack zs_heartbeat
	zs_error zs_snapshot_done zs_take_frames zs_fake_server zs_now_hlc/;
our %EXPORT_TAGS = (all => \@EXPORT_OK);

use constant {
	HELLO => 1, RECORDS => 2, ACK => 3, HEARTBEAT => 4,
	SNAPSHOT_DONE => 5, ERROR => 6,
};

sub zs_frame {
	my ($type, $body) = @_;
	return pack('N', 1 + length $body) . chr($type) . $body;
}

# zs_hello($node_id, [$zone, $kind, $kind_version], ...)
sub zs_hello {
	my ($node_id, @zones) = @_;
	my $b = 'ZSYN' . pack('n', 1) . pack('Q>', $node_id) . pack('n', scalar @zones);
	for my $z (@zones) {
		$b .= chr(length $z->[0]) . $z->[0] . chr($z->[1] // 1)
			. pack('n', $z->[2] // 1);
	}
	return zs_frame(HELLO, $b);
}

sub zs_now_hlc { return int(time() * 1000) << 16 }

# zs_record(key => , value => , hlc => , origin => , ttl => , tombstone => 1)
sub zs_record {
	my (%r) = @_;
	my $value = $r{tombstone} ? '' : ($r{value} // '');
	return chr($r{tombstone} ? 1 : 0) . pack('Q>', $r{hlc} // zs_now_hlc())
		. pack('Q>', $r{origin} // 0x1234567) . pack('N', $r{ttl} // 0)
		. pack('n', length $r{key}) . $r{key}
		. pack('N', length $value) . $value;
}

# zs_records(seq => , zone => , kind => 1, flags => 0, records => [...])
sub zs_records {
	my (%f) = @_;
	my @recs = @{$f{records} // []};
	return zs_frame(RECORDS, pack('Q>', $f{seq}) . chr(length $f{zone}) . $f{zone}
		. chr($f{kind} // 1) . pack('n', $f{kind_version} // 1)
		. chr($f{flags} // 0) . pack('n', scalar @recs) . join('', @recs));
}

sub zs_ack { return zs_frame(ACK, pack('Q>', $_[0])) }
sub zs_heartbeat { return zs_frame(HEARTBEAT, '') }
sub zs_snapshot_done { return zs_frame(SNAPSHOT_DONE, pack('Q>', $_[0])) }

sub zs_error {
	my ($code, $text) = @_;
	return zs_frame(ERROR, pack('n', $code) . pack('n', length $text) . $text);
}

# Removes the complete frames at the start of $$buf; returns them as
# [$type, $body] pairs.
sub zs_take_frames {
	my ($buf) = @_;
	my @frames;
	while (length $$buf >= 4) {
		my $len = unpack('N', $$buf);
		last if length $$buf < 4 + $len;
		my $f = substr($$buf, 0, 4 + $len, '');
		push @frames, [ord(substr($f, 4, 1)), substr($f, 5)];
	}
	return @frames;
}

# A fake node: accepts connections on $port (or the unix socket $port, if
# it is a path) one at a time, answers the
# HELLO with its own (zones as for zs_hello), then reads the records the
# node sends. Options:
#   ack => 0|1         acknowledge RECORDS frames (default 1)
#   read_rate => N     read at most N bytes a second (default: all)
#   rcvbuf => N        SO_RCVBUF of the accepted sockets (default 4096)
#   stats => $file     appends "<time> <bytes read> <last seq>" lines
# It sends a HEARTBEAT every 300 ms, so that the node never times it out
# for silence.
sub zs_fake_server {
	my ($port, %o) = @_;
	my $ack = $o{ack} // 1;
	my $server;
	if ($port =~ m{/}) {
		unlink $port;
		$server = IO::Socket::UNIX->new(Local => $port, Listen => 16)
			or die "cannot listen on $port: $!\n";
		# nginx's workers may run as another user
		chmod 0777, $port;
	} else {
		$server = IO::Socket::INET->new(LocalAddr => "127.0.0.1:$port",
			Listen => 16, ReuseAddr => 1)
			or die "cannot listen on $port: $!\n";
	}
	setsockopt($server, SOL_SOCKET, SO_RCVBUF, $o{rcvbuf} // 4096);

	my $id = 0x7e57_0000 + int(rand(0xffff));
	while (my $c = $server->accept()) {
		$c->blocking(0);
		my $sel = IO::Select->new($c);
		my ($buf, $total, $seq, $acked) = ('', 0, 0, 0);
		my ($hello, $last_hb, $last_stat) = (0, time(), 0);
		my $tick = 0.05;
		my $per_tick = $o{read_rate} ? int($o{read_rate} * $tick) || 1 : 1 << 20;
		CONN: while (1) {
			my $want = $per_tick;
			while ($want > 0) {
				last unless $sel->can_read($o{read_rate} ? 0 : $tick);
				my $n = sysread($c, my $chunk, $want);
				last CONN if defined $n && $n == 0;
				last unless defined $n;
				$want -= $n;
				$total += $n;
				$buf .= $chunk;
			}
			my $out = '';
			for my $f (zs_take_frames(\$buf)) {
				if ($f->[0] == HELLO && !$hello++) {
					$out .= zs_hello($id, @{$o{zones} // []});
				} elsif ($f->[0] == RECORDS) {
					$seq = unpack('Q>', $f->[1]);
				} elsif ($f->[0] == ERROR) {
					last CONN;
				}
			}
			if ($ack && $seq > $acked) {
				$out .= zs_ack($seq);
				$acked = $seq;
			}
			if ($hello && time() - $last_hb > 0.3) {
				$out .= zs_heartbeat();
				$last_hb = time();
			}
			if (length $out) {
				$c->blocking(1);
				syswrite($c, $out) // last CONN;
				$c->blocking(0);
			}
			if ($o{stats} && time() - $last_stat > 0.2) {
				open my $fh, '>>', $o{stats} or die "$o{stats}: $!\n";
				printf $fh "%.3f %d %d\n", time(), $total, $seq;
				close $fh;
				$last_stat = time();
			}
			sleep($tick) if $o{read_rate};
		}
		close $c;
	}
}

1;
