package Test::Nginx::ZoneSync;

# Speaking the zone_sync wire protocol (docs/PROTOCOL.md) from perl: the
# one place the tests encode and decode frames (builders, parsers, a frame
# splitter), and a fake node for the tests of slow peers. A scripted peer
# object built on these is Test::Nginx::SyncPeer.

=head1 SYNOPSIS

    use Test::Nginx::ZoneSync qw/:all/;

    # frames; a HELLO is of version 1 (no resume fields: the node answers
    # as a version-1 node does)
    my $bytes = zs_hello(0x1234567, ['h', 1, 1])
        . zs_records(seq => 1, zone => 'h',
            records => [zs_record(key => 'k', value => 'v')]);
    # bodies, for frames built or cut by hand
    zs_frame($type, zs_hello_body($id, @zones));
    zs_records_body(seq => 1, zone => 'h', records => [...]);
    my @frames = zs_take_frames(\$buffer);   # ([$type, $body], ...)
    zs_parse_hello($body); zs_parse_records($body);
    zs_now_hlc();

    # frame types: HELLO RECORDS ACK HEARTBEAT SNAPSHOT_DONE ERROR POSITION
    use Test::Nginx::ZoneSync qw/:types/;

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

use constant {
	HELLO => 1, RECORDS => 2, ACK => 3, HEARTBEAT => 4,
	SNAPSHOT_DONE => 5, ERROR => 6, POSITION => 7,
};

our @TYPES = qw/HELLO RECORDS ACK HEARTBEAT SNAPSHOT_DONE ERROR POSITION/;
our @EXPORT_OK = (qw/zs_frame zs_hello zs_hello_body zs_record zs_records
	zs_records_body zs_ack zs_heartbeat zs_error zs_snapshot_done
	zs_take_frames zs_parse_hello zs_parse_records zs_fake_server
	zs_now_hlc/, @TYPES);
our %EXPORT_TAGS = (all => [grep { !/^[A-Z]/ } @EXPORT_OK], types => \@TYPES);

sub zs_frame {
	my ($type, $body) = @_;
	return pack('N', 1 + length $body) . chr($type) . $body;
}

# the body of a version-1 HELLO: zs_hello_body($node_id,
# [$zone, $kind, $kind_version], ...)
sub zs_hello_body {
	my ($node_id, @zones) = @_;
	my $b = 'ZSYN' . pack('n', 1) . pack('Q>', $node_id) . pack('n', scalar @zones);
	for my $z (@zones) {
		$b .= chr(length $z->[0]) . $z->[0] . chr($z->[1] // 1)
			. pack('n', $z->[2] // 1);
	}
	return $b;
}

sub zs_hello { return zs_frame(HELLO, zs_hello_body(@_)) }

# a hybrid-logical-clock timestamp for now (section 5.1)
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

# zs_records_body(seq => , zone => , kind => 1, kind_version => 1,
# flags => 0, records => [zs_record(...), ...])
sub zs_records_body {
	my (%f) = @_;
	my @recs = @{$f{records} // []};
	return pack('Q>', $f{seq}) . chr(length $f{zone}) . $f{zone}
		. chr($f{kind} // 1) . pack('n', $f{kind_version} // 1)
		. chr($f{flags} // 0) . pack('n', scalar @recs) . join('', @recs);
}

sub zs_records { return zs_frame(RECORDS, zs_records_body(@_)) }

sub zs_ack { return zs_frame(ACK, pack('Q>', $_[0])) }
sub zs_heartbeat { return zs_frame(HEARTBEAT, '') }
sub zs_snapshot_done { return zs_frame(SNAPSHOT_DONE, pack('Q>', $_[0])) }

sub zs_error {
	my ($code, $text) = @_;
	return zs_frame(ERROR, pack('n', $code) . pack('n', length $text) . $text);
}

# a HELLO body: { magic, version, node_id, zones => [ [name, kind,
# kind_version, (version 2:) epoch, seen_epoch, seen_seq], ... ] }
sub zs_parse_hello {
	my ($b) = @_;
	my ($magic, $version, $id, $n) = unpack('a4 n Q> n', $b);
	my $off = 16;
	my @zones;
	for (1 .. $n) {
		my $len = ord(substr($b, $off, 1));
		my $name = substr($b, $off + 1, $len);
		my ($kind, $kv) = unpack('C n', substr($b, $off + 1 + $len, 3));
		my @resume;
		@resume = unpack('Q> Q> Q>', substr($b, $off + 4 + $len, 24))
			if $version >= 2;
		push @zones, [ $name, $kind, $kv, @resume ];
		$off += 4 + $len + ($version >= 2 ? 24 : 0);
	}
	return { magic => $magic, version => $version, node_id => $id,
		zones => \@zones };
}

# a RECORDS body: { seq, zone, kind, kind_version, flags, records => [
# { zone, key, value, hlc, origin, ttl, tombstone } ] }
sub zs_parse_records {
	my ($b) = @_;
	my ($seq, $zlen) = unpack('Q> C', $b);
	my $zone = substr($b, 9, $zlen);
	my ($kind, $kv, $flags, $n) = unpack('C n C n', substr($b, 9 + $zlen, 6));
	my $off = 15 + $zlen;
	my @r;
	for (1 .. $n) {
		my ($rf, $hlc, $origin, $ttl, $klen) =
			unpack('C Q> Q> N n', substr($b, $off, 23));
		my $key = substr($b, $off + 23, $klen);
		my $vlen = unpack('N', substr($b, $off + 23 + $klen, 4));
		my $value = substr($b, $off + 27 + $klen, $vlen);
		push @r, { zone => $zone, key => $key, value => $value, hlc => $hlc,
			origin => $origin, ttl => $ttl, tombstone => $rf & 1 };
		$off += 27 + $klen + $vlen;
	}
	return { seq => $seq, zone => $zone, kind => $kind, kind_version => $kv,
		flags => $flags, records => \@r };
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
